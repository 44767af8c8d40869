"""detektr's shipped processors, one module each; every module here is discovered automatically."""
