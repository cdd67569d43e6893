"""Fuzz tests of the record decoders, validators and engine handlers (see test_record_decoders)."""
