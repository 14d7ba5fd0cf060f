"""HTTP <-> domain: one module per OpenAPI tag, functions named after operationIds.

Handlers unpack arguments, call one domain function and shape the JSON. They
open no database, call no provider and build no error body.
"""
