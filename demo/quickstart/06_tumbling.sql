-- Lesson 6: one row per symbol per minute, emitted when the minute is over.
-- @app: quickstart_tumbling
-- @version: 1.0.0

CREATE TABLE volume_per_minute AS
SELECT symbol PRIMARY KEY,
       _window_start AS minute_start,
       COUNT(*) AS trades,
       SUM(quantity) AS volume
FROM trades
GROUP BY symbol
WINDOW TUMBLING(ts, 1m)
EMIT FINAL
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './data/trades.csv',
    'trades.format' = 'csv',
    'volume_per_minute.type' = 'file_sink',
    'volume_per_minute.path' = './output/06_volume_per_minute.csv',
    'volume_per_minute.format' = 'csv',
    'watermark.max_out_of_orderness' = '5s'
);
