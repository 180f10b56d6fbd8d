-- Lesson 2: keep only the trades that matter.
-- @app: quickstart_filter
-- @version: 1.0.0

CREATE STREAM big_trades AS
SELECT id, symbol, price, quantity
FROM trades
WHERE price * quantity > 20000
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './data/trades.csv',
    'trades.format' = 'csv',
    'big_trades.type' = 'file_sink',
    'big_trades.path' = './output/02_big_trades.csv',
    'big_trades.format' = 'csv'
);
