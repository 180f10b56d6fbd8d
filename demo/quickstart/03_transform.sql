-- Lesson 3: arithmetic, CASE and string functions.
-- @app: quickstart_transform
-- @version: 1.0.0

CREATE STREAM enriched_trades AS
SELECT id,
       LOWER(symbol) AS ticker,
       UPPER(symbol) || '-' || CAST(id AS VARCHAR) AS trade_code,
       price * quantity AS notional,
       CASE WHEN price > 400 THEN 'HIGH' WHEN price > 200 THEN 'MID' ELSE 'LOW' END AS band
FROM trades
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './data/trades.csv',
    'trades.format' = 'csv',
    'enriched_trades.type' = 'file_sink',
    'enriched_trades.path' = './output/03_enriched_trades.csv',
    'enriched_trades.format' = 'csv'
);
