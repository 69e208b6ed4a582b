"""The names of the image sources and splits, apart from their loaders (data/sources.py),
so that checking a config does not import torch."""

SOURCES = ("mnist", "imagefolder", "imagenet")
SPLITS = ("train", "val")
