-- Keep the candidates whose decoded image is big enough and not too elongated
-- (DataComp's basic filter: smaller side >= 200px and aspect ratio <= 3 at full scale).
-- @param min_side = 32      smallest allowed shorter side, in pixels
-- @param max_aspect = 3.0   largest allowed longer side / shorter side
SELECT uid FROM candidates
WHERE image_shape_ok(width, height, $min_side, $max_aspect)
