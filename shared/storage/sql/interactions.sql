-- The training window's interactions, from the events table's export: what the Scan path's
-- page handlers keep (shared/storage/training_data.py), in SQL that Athena (Trino) runs on AWS and
-- DuckDB runs on one machine (shared/storage/duckdb_athena.py gives DuckDB the Trino functions it lacks).
-- The events relation is the events table as of the export chain's last export: one row per
-- event, its item as DynamoDB JSON (export_queries.py, events_of_chain.sql).
-- Customers who may not be trained on are left out by the reader: consent has one home, in Python.
-- Every column is a number, so that the reader parses text into arrays with no Python work per
-- row: the customer and the item by their numbers (codes.sql), the event type by its code
-- ({event_codes}: shared/training/interactions.py's EVENT_CODES), and the basket of a purchase
-- as its rank among its customer's baskets (-1: not a purchase).
WITH events AS ({events}),
window_events AS (
    -- Seconds as Python's timestamp() gives them: whole microseconds over 10^6, rounded once.
    -- Trino's to_unixtime adds the fraction apart, one unit in the last place off for a quarter
    -- of times; of a whole second it is exact in both engines.
    SELECT user_id, item_id, event_type, quantity,
           (CAST(to_unixtime(date_trunc('second', stamp)) AS BIGINT) * 1000000 + micros) / 1e6 AS seconds, order_id
    FROM (
        SELECT item.user_id.s AS user_id,
               item.item_id.s AS item_id,
               item.event_type.s AS event_type,
               -- As the reader holds it (float32, REAL here), within what ingest accepts.
               CAST(CAST(GREATEST(LEAST(CAST(COALESCE(item.quantity.n, '1') AS DOUBLE), {max_quantity}),
                                  -{max_quantity}) AS REAL) AS DOUBLE) AS quantity,
               try(from_iso8601_timestamp_nanos(item.ts.s)) AS stamp,
               CAST(substr(item.ts.s, 21, 6) AS BIGINT) AS micros,  -- the stored form's (length, pattern below)
               item.order_id.s AS order_id
        FROM events
        -- A search or an impression names no item: no interaction.
        WHERE item.item_id.s IS NOT NULL
          AND item.ts.s BETWEEN '{window_start}' AND '{window_end}'
          -- Only events as ingest stores them count, as on the Scan path (training_data.py,
          -- interaction_row): a known type, a time in its own form; one written by hand is left out.
          AND item.event_type.s IN ({counted_types})
          AND length(item.ts.s) = {time_length}
          AND regexp_like(item.ts.s, '{stored_time}')
    ) AS stored
    WHERE stamp IS NOT NULL  -- a day or an hour that does not exist
),
-- Returns are no interaction of their own: they take back the purchases of their (customer, item),
-- and those returned in full are left out. One pass over the window's purchases and returns (a
-- pass each, and a join, cost a tenth more of the whole query on DuckDB); a (customer, item) with
-- no return, or no purchase, has a NULL difference: not returned in full.
returned_in_full AS (
    SELECT user_id, item_id
    FROM window_events
    WHERE event_type IN ('purchase', 'return')
    GROUP BY user_id, item_id
    HAVING SUM(CASE WHEN event_type = 'purchase' THEN quantity END)
           - SUM(CASE WHEN event_type = 'return' THEN quantity END) <= 0
),
kept AS (
    SELECT window_events.*
    FROM window_events
    LEFT JOIN returned_in_full
           ON window_events.event_type = 'purchase'
          AND returned_in_full.user_id = window_events.user_id
          AND returned_in_full.item_id = window_events.item_id
    WHERE window_events.event_type <> 'return' AND returned_in_full.user_id IS NULL
),
{codes}
-- A purchase's basket is its order, or without an order id its customer's purchases of that UTC
-- day (InteractionLog's rule): ranked among its customer's baskets, the reader numbers them
-- across customers.
SELECT user_codes.code AS u,
       item_codes.code AS i,
       CASE kept.event_type {event_codes} END AS t,
       kept.quantity AS q,
       kept.seconds AS s,
       CASE WHEN kept.event_type = 'purchase'
            THEN dense_rank() OVER (PARTITION BY kept.user_id, kept.event_type = 'purchase'
                                    ORDER BY kept.order_id IS NULL, kept.order_id,
                                             CASE WHEN kept.order_id IS NULL THEN floor(kept.seconds / 86400) END) - 1
            ELSE -1 END AS b
FROM kept
JOIN user_codes ON user_codes.user_id = kept.user_id
JOIN item_codes ON item_codes.item_id = kept.item_id
