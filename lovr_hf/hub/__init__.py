"""The Hub: publish, push, materialize, release import and export."""
