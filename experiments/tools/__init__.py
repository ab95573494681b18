"""Command-line tools around training: `python -m experiments.tools.NAME`.

  aot_compile    compile a config for a TPU slice this host does not have (fits? how fast?)
  env_check      versions, devices, and what each extra still needs
  fit_attribute  fit an attribute head onto a trained or pretrained trunk
Leaf scripts like reports/ and bench/: they never import one another."""
