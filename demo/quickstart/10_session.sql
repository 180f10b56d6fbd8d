-- Lesson 10: trading sessions. Per symbol, a session is a run of trades no more than
-- 90 seconds apart (exactly 90 seconds still continues it); it closes once the
-- watermark is past its last trade + 90 seconds, and is emitted then.
-- @app: quickstart_session
-- @version: 1.0.0

CREATE TABLE symbol_sessions AS
SELECT symbol PRIMARY KEY,
       _window_start AS session_start,
       _window_end AS session_end,
       COUNT(*) AS trades,
       SUM(quantity) AS volume,
       FIRST_VALUE(price) AS open_price,
       LAST_VALUE(price) AS close_price
FROM trades
GROUP BY symbol
WINDOW SESSION(ts, 90s)
EMIT FINAL
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './data/trades.csv',
    'trades.format' = 'csv',
    'symbol_sessions.type' = 'file_sink',
    'symbol_sessions.path' = './output/10_symbol_sessions.csv',
    'symbol_sessions.format' = 'csv',
    'watermark.max_out_of_orderness' = '5s'
);
