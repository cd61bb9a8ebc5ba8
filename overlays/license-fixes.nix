# Rebuilds that avoid copyleft dependencies in what the images ship.
final: prev: {
  # ffmpeg = prev.ffmpeg.override { withGPL = false; };
}
