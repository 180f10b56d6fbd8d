-- Lesson 5: compare each trade with the previous one of the same symbol.
-- @app: quickstart_lag
-- @version: 1.0.0

CREATE STREAM price_moves AS
SELECT id, symbol, price,
       LAG(price) OVER (ROWS WINDOW BUFFER 10 ROWS PARTITION BY symbol ORDER BY ts) AS prev_price,
       ROUND(price - LAG(price) OVER (ROWS WINDOW BUFFER 10 ROWS PARTITION BY symbol ORDER BY ts), 2) AS change
FROM trades
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './data/trades.csv',
    'trades.format' = 'csv',
    'price_moves.type' = 'file_sink',
    'price_moves.path' = './output/05_price_moves.csv',
    'price_moves.format' = 'csv'
);
