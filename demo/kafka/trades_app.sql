-- Kafka demo: trades topic -> filter and projection -> big_trades topic.
-- Bad messages go to the trades_app.dlq topic with their original bytes and
-- velo.error.* headers. The brokers come from ${KAFKA_BROKERS}.
-- @app: trades_app
-- @version: 1.0.0
-- @batch_size: 2000

-- @name: big_trades
CREATE STREAM big_trades AS
SELECT id PRIMARY KEY,
       symbol,
       price * quantity AS notional,
       CASE WHEN price > 400 THEN 'HIGH' ELSE 'NORMAL' END AS band,
       _headers
FROM trades
WHERE price > 100
WITH (
    'trades.type' = 'kafka_source',
    'trades.bootstrap.servers' = '${KAFKA_BROKERS}',
    'trades.value.format' = 'json',
    'big_trades.type' = 'kafka_sink',
    'big_trades.bootstrap.servers' = '${KAFKA_BROKERS}',
    'big_trades.value.format' = 'json',
    'failure_strategy' = 'SendToDLQ',
    'dlq.type' = 'kafka',
    'dlq.topic' = 'trades_app.dlq'
);
