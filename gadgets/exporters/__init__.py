"""Viewer, PACS and analysis files from reconstructed ``ismrmrd.Image`` objects.

One module per output format, and the pieces they share:

- :mod:`~gadgets.exporters.png`: an overview figure (every frame, x-t and y-t profiles, scales;
  with ground truth also the truth and ``|error|``);
- :mod:`~gadgets.exporters.dicom`: an MR series that sorts and plays as a cine;
- :mod:`~gadgets.exporters.nifti`: a NIfTI-1 volume with the scanner geometry and frame interval;
- :mod:`~gadgets.exporters.stacks` (images grouped into slices of frames),
  :mod:`~gadgets.exporters.geometry` (LPS affines), :mod:`~gadgets.exporters.timing` (frame
  times) and :mod:`~gadgets.exporters.uids` (deterministic DICOM UIDs); method labels and
  series numbers come from the registry, :mod:`passnet_core.methods`.

The caller parses the ISMRMRD header once and hands the parsed header to every exporter.
Heavy libraries (numpy, ismrmrd, pydicom, nibabel, matplotlib) are imported inside functions:
importing any of these modules costs nothing.
"""
