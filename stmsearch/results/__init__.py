"""Reading finished studies: typed trial records (``records``), fronts, the knee and hypervolume
history (``frontier``) and the Pareto table (``table``). The dashboard and export both read
studies through this layer; nothing here plots or writes files."""
