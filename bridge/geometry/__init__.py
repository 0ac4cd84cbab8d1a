"""Pure geometry: warp, grid mask, mask <-> polygon, RLE, inpainting. numpy/OpenCV only, no I/O.

Modules: ``images`` (decode/encode frames), ``warp`` (quadrat corners -> square), ``grid`` (117-point
grid -> lattice and line mask), ``polygons`` (mask <-> polygon), ``rle`` (CVAT RLE and Nuclio detector
masks), ``inpaint`` (OpenCV Telea fallback), ``errors`` (``GeometryError`` with a machine-readable
``code``).
"""
