-- Lesson 1: copy a CSV file to a JSON-lines file, unchanged.
-- @app: quickstart_passthrough
-- @version: 1.0.0

CREATE STREAM all_trades AS
SELECT * FROM trades
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './data/trades.csv',
    'trades.format' = 'csv',
    'all_trades.type' = 'file_sink',
    'all_trades.path' = './output/01_all_trades.jsonl',
    'all_trades.format' = 'jsonl'
);
