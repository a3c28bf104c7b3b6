-- The events table as of the last export of a chain (a full export, then incremental ones): each
-- event's newest image. A full export's line holds the item (Item); an incremental export's line
-- holds its key (Keys) and its new image (NewImage), or no image for a deleted event (an erasure).
-- export_number is the export's place in the chain (0: the full one).
SELECT item
FROM (
    SELECT COALESCE(Item, NewImage) AS item,
           row_number() OVER (
               PARTITION BY COALESCE(Item.user_id.S, Keys.user_id.S), COALESCE(Item.event_id.S, Keys.event_id.S)
               ORDER BY export_number DESC
           ) AS newest
    FROM {table}
) AS images
WHERE newest = 1 AND item IS NOT NULL
