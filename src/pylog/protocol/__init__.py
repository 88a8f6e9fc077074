"""Kafka wire protocol: declarative schemas for every message pylog speaks, and one codec."""
