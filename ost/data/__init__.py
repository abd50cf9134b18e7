"""Samples: the schema every source maps into (`schema`), the synthetic pool (`digits` draws, `tasks`
asks, `pool` plants the noise), real files (`loaders`, `answers` finds a final answer, `validate`
refuses or records a bad record). Imports only `ost.runs`.
"""
