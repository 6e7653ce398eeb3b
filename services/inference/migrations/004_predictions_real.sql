-- 004_predictions_real.sql — the prediction log keeps its inputs and outputs as real[]
-- (rows x features; outputs one per row, or rows x classes), written by a binary COPY
-- (inference_db_log.c). A missing input (JSON null, NaN on the wire) is a NULL element.
-- As json text, a logged 1 000 x 20 batch cost the log's thread 20 000 formatted numbers
-- and PostgreSQL 7 ms to parse them; as binary real[] it is 1.3 ms. STORAGE EXTERNAL: an
-- array of floats does not compress (100 such batches took 9 000 kB compressed, 8 984 kB
-- plain), and trying doubled the COPY's time (2.4 ms a batch instead of 1.3).
-- The existing rows' JSON arrays become array literals ([[1,null]] -> {{1,null}}).
ALTER TABLE predictions
    ALTER COLUMN inputs TYPE real[] USING translate(inputs::text, '[]', '{}')::real[],
    ALTER COLUMN outputs TYPE real[] USING translate(outputs::text, '[]', '{}')::real[];
ALTER TABLE predictions
    ALTER COLUMN inputs SET STORAGE EXTERNAL,
    ALTER COLUMN outputs SET STORAGE EXTERNAL;
