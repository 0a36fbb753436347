"""Analysis over the warehouse's SQL views: queries, statistics, exports and figures."""
