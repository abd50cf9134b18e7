"""Numbers and pictures: detection and significance metrics (`metrics`), the summary and README table
(`analysis`), and the figures (`plots`). Imports `ost.data` and below.
"""
