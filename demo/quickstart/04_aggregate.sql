-- Lesson 4: a table of running statistics per symbol (one output row per input row).
-- @app: quickstart_aggregate
-- @version: 1.0.0

CREATE TABLE symbol_stats AS
SELECT symbol PRIMARY KEY,
       COUNT(*) AS trades,
       SUM(quantity) AS volume,
       ROUND(AVG(price), 2) AS avg_price
FROM trades
GROUP BY symbol
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './data/trades.csv',
    'trades.format' = 'csv',
    'symbol_stats.type' = 'file_sink',
    'symbol_stats.path' = './output/04_symbol_stats.csv',
    'symbol_stats.format' = 'csv'
);
