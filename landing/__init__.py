"""Webhook landing: verify each Whop webhook and store it raw and durably before answering."""
