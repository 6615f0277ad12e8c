package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// The ceiling is what a bare fasthttp server does on this machine, in this
// run, under the same wrk settings, when it returns exactly the bytes of
// GET /api/health (same status, body and headers, same sizes). HTTP rows
// are ratios to it, so the targets do not depend on how fast the machine
// is. Other processes on a shared machine make any one measurement drift,
// so each route is measured between two ceiling runs (see loadRows), and a
// ceiling run is reused by the next route when nothing ran in between.

// ceilingRun loads the ceiling server now, unless the last load the bench
// ran was already a ceiling run, which it then returns.
func (e *Env) ceilingRun(ctx context.Context) (WrkResult, error) {
	e.mu.Lock()
	last := e.lastCeiling
	e.mu.Unlock()
	if last != nil {
		return *last, nil
	}
	addr, err := e.ceilingAddr(ctx)
	if err != nil {
		return WrkResult{}, err
	}
	res, err := e.load(ctx, "http://"+addr+"/api/health", nil, "")
	if err != nil {
		return res, err
	}
	e.mu.Lock()
	e.lastCeiling = &res
	e.mu.Unlock()
	return res, nil
}

// ceilingAddr starts the ceiling server on first use and returns its
// address.
func (e *Env) ceilingAddr(ctx context.Context) (string, error) {
	e.mu.Lock()
	addr := e.ceiling
	e.mu.Unlock()
	if addr != "" {
		return addr, nil
	}
	d, err := e.Daemon(ctx)
	if err != nil {
		return "", err
	}
	addr, err = e.startCeiling(d)
	if err != nil {
		return "", err
	}
	e.mu.Lock()
	e.ceiling = addr
	e.mu.Unlock()
	return addr, nil
}

// startCeiling serves, in the harness's own process, a copy of one
// GET /api/health response from d: the same status, body and headers (an
// X-Request-Id of the same length; Date comes from fasthttp as it does in
// fangd). It checks that a response from the copy has the same body and
// header size as the original, and stops the server at Close.
func (e *Env) startCeiling(d *Daemon) (string, error) {
	orig, err := fetch(d.URL("/api/health"), nil)
	if err != nil {
		return "", err
	}
	defer fasthttp.ReleaseResponse(orig)
	body := append([]byte(nil), orig.Body()...)
	contentType := append([]byte(nil), orig.Header.ContentType()...)
	type kv struct{ k, v []byte }
	var headers []kv
	for k, v := range orig.Header.All() {
		switch string(k) {
		case fasthttp.HeaderContentLength, fasthttp.HeaderContentType, fasthttp.HeaderDate:
			continue // fasthttp writes these itself, as it does for fangd
		}
		headers = append(headers, kv{append([]byte(nil), k...), append([]byte(nil), v...)})
	}
	status := orig.StatusCode()

	srv := &fasthttp.Server{
		NoDefaultServerHeader: true,
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetStatusCode(status)
			for _, h := range headers {
				ctx.Response.Header.SetCanonical(h.k, h.v)
			}
			ctx.SetContentTypeBytes(contentType)
			ctx.SetBody(body)
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { _ = srv.Serve(ln) }() // ends when Shutdown closes ln
	e.onClose(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.ShutdownWithContext(ctx); err != nil {
			e.logf("stopping the ceiling server: %v", err)
		}
	})
	addr := ln.Addr().String()

	cp, err := fetch("http://"+addr+"/api/health", nil)
	if err != nil {
		return "", err
	}
	defer fasthttp.ReleaseResponse(cp)
	if !bytes.Equal(cp.Body(), body) || len(cp.Header.Header()) != len(orig.Header.Header()) {
		return "", fmt.Errorf("ceiling response differs from /api/health:\n%s%s\nvs\n%s%s",
			orig.Header.Header(), body, cp.Header.Header(), cp.Body())
	}
	return addr, nil
}
