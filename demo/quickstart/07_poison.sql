-- Lesson 7: bad rows do not stop a job. Each is reported (stage, line, what is wrong)
-- and the good rows go on. Run it and read the summary's error groups.
-- @app: quickstart_poison
-- @version: 1.0.0

CREATE STREAM clean_trades AS
SELECT id, symbol, price * quantity AS notional
FROM trades
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './data/trades_poison.csv',
    'trades.format' = 'csv',
    'clean_trades.type' = 'file_sink',
    'clean_trades.path' = './output/07_clean_trades.csv',
    'clean_trades.format' = 'csv',
    'failure_strategy' = 'LogAndContinue'
);
