# Custom compilation flags and build options.
final: prev: {
  # gnucobol = prev.gnucobol.override { useBerkeleyDB = false; };
}
