package main

import (
	"context"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"
)

// recentSeed is how many audited calls are made before the load, so that
// every ?limit=20 read returns a full page of 20 entries.
const recentSeed = 40

// runAuditRecent loads GET /api/audit/recent?limit=20 with the API key:
// authenticated middleware plus a request/reply hop to the audit writer
// actor and a ~7 KB body of real entries.
func runAuditRecent(ctx context.Context, env *Env) ([]Row, error) {
	d, err := env.Daemon(ctx)
	if err != nil {
		return nil, err
	}
	if err := seedAudit(d, recentSeed); err != nil {
		return nil, err
	}
	return loadRows(ctx, env, httpRead{Label: "GET /api/audit/recent?limit=20", Path: "/api/audit/recent?limit=20", Auth: true, MinRatio: 0.65})
}

// seedAudit makes n audited calls (PUT /api/logs/level to the level the
// bench already runs at), each of which appends one entry.
func seedAudit(d *Daemon, n int) error {
	c := &fasthttp.Client{}
	for range n {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.SetRequestURI(d.URL("/api/logs/level"))
		req.Header.SetMethod(fasthttp.MethodPut)
		req.Header.Set("Authorization", "Bearer "+d.APIKey)
		req.Header.SetContentType("application/json")
		req.SetBodyString(`{"level":"warn"}`)
		err := c.DoTimeout(req, resp, 5*time.Second)
		status, body := resp.StatusCode(), string(resp.Body())
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		if err != nil {
			return fmt.Errorf("seeding the audit log: %w", err)
		}
		if status != fasthttp.StatusOK {
			return fmt.Errorf("seeding the audit log: PUT /api/logs/level: %d %s", status, body)
		}
	}
	return nil
}
