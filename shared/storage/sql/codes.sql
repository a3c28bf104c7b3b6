-- Each user id and each item id with stored events, numbered from 0 in the order of the ids.
-- interactions.sql writes these numbers in place of the ids, and ids.sql writes the ids with
-- their numbers: both run this same text over the same events relation (the export chain, as it
-- stands at its last export), so the numbers agree, and the train function reads the interactions
-- as numbers alone (shared/storage/export_queries.py). An event without a user id (not DynamoDB's:
-- it is the table's key) numbers no id, and gives no row.
user_codes AS (
    SELECT user_id, row_number() OVER (ORDER BY user_id) - 1 AS code
    FROM (SELECT DISTINCT item.user_id.s AS user_id FROM events WHERE item.user_id.s IS NOT NULL) AS users
),
item_codes AS (
    SELECT item_id, row_number() OVER (ORDER BY item_id) - 1 AS code
    FROM (SELECT DISTINCT item.item_id.s AS item_id FROM events
          WHERE item.item_id.s IS NOT NULL AND item.user_id.s IS NOT NULL) AS items
)
