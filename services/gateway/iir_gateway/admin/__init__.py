"""The admin and operations API: keys, teams, users, spend, models, health, the admin UI."""
