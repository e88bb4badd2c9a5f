"""Evaluation: metrics, protocols, baselines, analyses, reports and model cards. `metrics` is numpy only."""
