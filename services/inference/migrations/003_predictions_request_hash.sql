-- 003_predictions_request_hash.sql — the prediction log finds a request by a hash index on
-- request_id instead of a btree on (model, request_id). Request ids are random, so each
-- logged row put the btree's insert on a random leaf page: in a COPY of 20 000 logged rows
-- that index was about 40 % of PostgreSQL's time (135 ms with it, 80 ms without, 90 ms with
-- the hash index instead). Only equality lookups use it (stats join feedback to predictions
-- by request_id, then keep the model's rows), which is what a hash index serves; the
-- (model, at) btree stays for the stats' time window.
DROP INDEX predictions_request;
CREATE INDEX predictions_request_id ON predictions USING hash (request_id);
