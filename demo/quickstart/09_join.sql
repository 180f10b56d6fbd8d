-- Lesson 9: enrich each trade with its instrument, joined from a file (a stream-table join).
-- @app: quickstart_join
-- @version: 1.0.0
--
-- `trades` (first in FROM) is the stream; `instruments` is a file without 'watch': the
-- *table side*, loaded before the first trade is read and reloaded when the file changes.
-- LEFT JOIN keeps a trade whose symbol is not in the file (NVDA), with empty instrument
-- columns; INNER JOIN would drop it (counted as filtered).

CREATE STREAM trades_with_instruments AS
SELECT t.id,
       t.symbol,
       i.name,
       i.sector,
       t.price * t.quantity AS notional
FROM trades t
LEFT JOIN instruments i ON t.symbol = i.symbol
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './data/trades.csv',
    'trades.format' = 'csv',
    'instruments.type' = 'file_source',
    'instruments.path' = './data/instruments.csv',
    'instruments.format' = 'csv',
    'trades_with_instruments.type' = 'file_sink',
    'trades_with_instruments.path' = './output/09_trades_with_instruments.csv',
    'trades_with_instruments.format' = 'csv'
);
