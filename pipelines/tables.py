"""The typed tables that pass between stages (polars schemas, documented once here)."""

import polars as pl

# data/clean/feedback.parquet — one row per survey response × free-text question.
# Rows with an empty or non-answer comment are kept (their scores still count for KPIs)
# and flagged through ``text_status``; only ``text_status == "ok"`` rows reach topic modelling.
FEEDBACK_SCHEMA: dict[str, pl.DataType] = {
    "verbatim_id": pl.String(),  # f"{source}:{response_id}:{question_id}", unique
    "source": pl.String(),  # name of the source in params.yaml (e.g. "survey")
    "file": pl.String(),  # raw file the row came from (path relative to the project)
    "row": pl.Int64(),  # 1-based data row in that file (header rows not counted)
    "response_id": pl.String(),
    "customer_id": pl.String(),
    "ts_utc": pl.Datetime("us", "UTC"),
    "date_local": pl.Date(),  # response date in the source's time zone
    "period": pl.String(),  # "YYYY-MM" of date_local
    "nps": pl.Int8(),  # 0–10, null when the source has no NPS question
    "csat": pl.Int8(),  # the source's csat_scale (1–5 by default), null when absent
    "persona": pl.String(),
    "channel": pl.String(),
    "product": pl.String(),
    "journey": pl.String(),  # 認知/検討/購買/使用/アフターフォロー
    "question_id": pl.String(),
    "text": pl.String(),  # normalised and redacted; the original never leaves the clean stage
    "lang": pl.String(),  # "ja" | "en" | "other" | "" (empty text)
    # "ok" | "non_answer" | "empty" | "duplicate" (same respondent, question and text seen before)
    "text_status": pl.String(),
    "redactions": pl.String(),  # comma-separated kinds replaced, e.g. "EMAIL,PHONE"; "" if none
    "ces": pl.Int8(),  # customer effort score (the source's ces_scale, 1–7 by default), null when absent
    "rating": pl.String(),  # categorical rating as written (NFKC, stripped), null when the source has none
}

# data/clean/tickets.parquet — one row per support ticket.
TICKETS_SCHEMA: dict[str, pl.DataType] = {
    "ticket_id": pl.String(),
    "customer_id": pl.String(),
    "file": pl.String(),
    "row": pl.Int64(),
    "channel": pl.String(),
    "product": pl.String(),
    "status": pl.String(),  # "solved" | "open" | "pending"
    "created_utc": pl.Datetime("us", "UTC"),
    "first_response_utc": pl.Datetime("us", "UTC"),  # null: no reply yet
    "resolved_utc": pl.Datetime("us", "UTC"),  # null: still open (censored)
    "period": pl.String(),  # "YYYY-MM" of creation, local time
    "first_response_h": pl.Float64(),  # hours; null when no reply yet
    "resolution_h": pl.Float64(),  # hours to resolution, or to the export time when open
    "is_open": pl.Boolean(),  # True → resolution_h is censored
    "text": pl.String(),  # normalised and redacted ticket description
    "lang": pl.String(),
    "redactions": pl.String(),
}

SEGMENT_COLUMNS = ("persona", "channel", "product", "journey")
