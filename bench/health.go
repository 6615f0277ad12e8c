package main

import "context"

// runHealth loads the public GET /api/health: the full middleware chain
// (request id, security headers, metrics, rate-limit check, auth check)
// and a tiny JSON body, no actor hop.
func runHealth(ctx context.Context, env *Env) ([]Row, error) {
	return loadRows(ctx, env, httpRead{Label: "GET /api/health", Path: "/api/health", MinRatio: 0.90})
}
