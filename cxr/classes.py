"""The four classes, in the one order every model output, table and record uses."""
CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
