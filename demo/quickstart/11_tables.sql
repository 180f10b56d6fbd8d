-- Lesson 11: an in-app table (CREATE TABLE without a sink) read by a later statement.
-- @app: quickstart_tables
-- @version: 1.0.0
--
-- `tech_instruments` has no sink in its WITH: it is not a job of its own but a table of
-- this application, computed when a job that reads it starts (its SELECT runs over the
-- file to the end) and recomputed when the file changes. `tech_trades` joins it, and
-- uses it again in a subquery.

CREATE TABLE tech_instruments AS
SELECT symbol PRIMARY KEY, UPPER(name) AS company
FROM instruments
WHERE sector = 'Technology'
WITH (
    'instruments.type' = 'file_source',
    'instruments.path' = './data/instruments.csv',
    'instruments.format' = 'csv'
);

CREATE STREAM tech_trades AS
SELECT t.id,
       t.symbol,
       c.company,
       t.quantity
FROM trades t
JOIN tech_instruments c ON t.symbol = c.symbol
WHERE t.quantity >= (SELECT COUNT(*) FROM tech_instruments) * 10
EMIT CHANGES
WITH (
    'trades.type' = 'file_source',
    'trades.path' = './data/trades.csv',
    'trades.format' = 'csv',
    'tech_trades.type' = 'file_sink',
    'tech_trades.path' = './output/11_tech_trades.csv',
    'tech_trades.format' = 'csv'
);
