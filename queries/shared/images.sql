-- The image-shape rule several recipes share (image_rules, combined, basic), defined once:
-- the shorter side at least min_side pixels and the longer side at most max_aspect times it.
CREATE OR REPLACE TEMP MACRO image_shape_ok(width, height, min_side, max_aspect) AS
    least(width, height) >= min_side AND greatest(width, height) <= max_aspect * least(width, height);
