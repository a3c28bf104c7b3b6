-- The user ids and the item ids with stored events, each with its number (codes.sql), from the
-- events table's export: the numbers name them in interactions.sql's output, and the nightly run
-- reads each user's history as serving does, from their recent-activity item (the users table's
-- export), or by Query for an id without one (shared/storage/recent_histories.py). The events
-- relation is the events table as of the export chain's last export, as for interactions.sql.
WITH events AS ({events}),
{codes}
SELECT 'u' AS k, code AS c, user_id AS id FROM user_codes
UNION ALL
SELECT 'i' AS k, code AS c, item_id AS id FROM item_codes
