-- Lesson 8: the One Billion Row Challenge, at any size: min/mean/max per station.
-- Generate the input first:  python generate_1brc.py 1000000 data/measurements.txt
-- @app: quickstart_1brc
-- @version: 1.0.0
-- @batch_size: 200000

CREATE TABLE station_stats AS
SELECT station PRIMARY KEY,
       MIN(temperature) AS min_temp,
       ROUND(AVG(temperature), 1) AS mean_temp,
       MAX(temperature) AS max_temp
FROM measurements
GROUP BY station
ORDER BY station
EMIT FINAL
WITH (
    'measurements.type' = 'file_source',
    'measurements.path' = '${BRC_INPUT:./data/measurements.txt}',
    'measurements.format' = 'csv',
    'measurements.delimiter' = ';',
    'station_stats.type' = 'file_sink',
    'station_stats.path' = '${BRC_OUTPUT:./output/08_station_stats.csv}',
    'station_stats.format' = 'csv'
);
