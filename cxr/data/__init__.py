"""The films: finding the database, scanning it, the committed split, reading PNG, JPEG, TIFF and
DICOM, walking a folder or an archive, preprocessing, augmentation, and the lungs (masks, segmenter,
crop). Imports only cxr.core."""
