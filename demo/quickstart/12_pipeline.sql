-- Lesson 12: a pipeline: the second statement reads the first one's output by its name.
-- @app: quickstart_pipeline
-- @version: 1.0.0
--
-- `big_trades` writes the trades over 200 to a file. `big_by_symbol` reads `big_trades`
-- by name (no WITH keys for it): it reads that file, only the rows `big_trades` has
-- committed, and ends when `big_trades` has ended. Each job keeps its own position.

CREATE STREAM big_trades AS
SELECT id, symbol, price FROM trades WHERE price > 200
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './data/trades.csv',
    'big_trades.type' = 'file_sink',
    'big_trades.path' = './output/12_big_trades.csv'
);

CREATE TABLE big_by_symbol AS
SELECT symbol, COUNT(*) AS trades, MAX(price) AS top
FROM big_trades
GROUP BY symbol
ORDER BY symbol
EMIT FINAL
WITH (
    'big_by_symbol.type' = 'file_sink',
    'big_by_symbol.path' = './output/12_big_by_symbol.csv'
);
