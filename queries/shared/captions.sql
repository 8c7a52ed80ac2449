-- Caption rules several recipes share (caption_rules, combined, basic), defined once.

-- Words in a caption: runs of non-space characters after trimming.
CREATE OR REPLACE TEMP MACRO caption_words(caption) AS
    len(string_split_regex(trim(caption), '\s+'));

-- A caption that is a camera or file name ("IMG_2041.jpg", "DSC00123"), not a description.
CREATE OR REPLACE TEMP MACRO caption_is_file_name(caption) AS
    regexp_matches(trim(caption), '(?i)^[\w.\- ]*\.(jpe?g|png|gif|webp|bmp|tiff?)$')
    OR regexp_matches(trim(caption), '(?i)^(img|dsc|dscn|dcim|image|photo|pic|screenshot)[_\- ]?\d+');
