-- 004_predictions_values.sql — the prediction log keeps its inputs and outputs as real[]:
-- input_values (rows x features, a NULL element for a missing value) and output_values
-- (one per row, or rows x classes), written by a binary COPY (inference_db_log.c). As json
-- text, a logged 1 000 x 20 batch cost the log's thread 20 000 formatted numbers and
-- PostgreSQL 12 ms of CPU to take them in; as binary real[] about 1.3 ms.
-- New columns rather than a change of type, so that the migration is instant (no rewrite
-- of a table that may hold months of log, under a lock, before the service can start) and
-- replicas of the previous release keep logging into inputs/outputs (json) during a
-- rolling update. Rows written before stay there; stats read both. Dropping the json
-- columns is for a later migration, once no replica writes them.
-- STORAGE EXTERNAL: an array of floats does not compress (100 such batches took 9 000 kB
-- compressed, 8 984 kB plain), and trying doubled the COPY's time (2.4 ms a batch
-- instead of 1.3).
ALTER TABLE predictions
    ADD COLUMN input_values real[],
    ADD COLUMN output_values real[];
ALTER TABLE predictions
    ALTER COLUMN input_values SET STORAGE EXTERNAL,
    ALTER COLUMN output_values SET STORAGE EXTERNAL;
