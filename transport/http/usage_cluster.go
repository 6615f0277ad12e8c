package http

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Usage reports in cluster mode (docs/cluster.md, "Usage reports across
// the cluster"): every node meters its own calls, so a node asked for a
// usage report asks every other member for its own (the request with the
// caller's credential and forwardedHeader, so the member answers from its
// ledger alone and asks nobody), adds their answers to its own
// (usage.Merge*) and says which nodes are in the sum. A member that does
// not answer in time is named in missing_nodes and the answer is marked
// partial: a total is never silently short.

// usagePeerTimeout bounds one member's answer (all its pages).
const usagePeerTimeout = 3 * time.Second

// usagePeerPage is the page size asked of a member (the endpoints' most).
const usagePeerPage = 1000

// usageCoverage is added to a report merged from the cluster's nodes.
type usageCoverage struct {
	// Nodes answered (this node first, then the others by name).
	Nodes []string `json:"nodes"`
	// Partial: some member did not answer (or the member list could not
	// be read); the totals lack its share.
	Partial      bool     `json:"partial"`
	MissingNodes []string `json:"missing_nodes"`
	ClusterError string   `json:"cluster_error,omitempty"`
}

// usageFromCluster reports whether this request adds up the cluster's
// reports: cluster mode, and not itself a member's question.
func (s *Server) usageFromCluster(ctx *fasthttp.RequestCtx) bool {
	return s.cluster != nil && s.hosts != nil && len(ctx.Request.Header.Peek(forwardedHeader)) == 0
}

// peerGet fetches one member's JSON answer into v.
type peerGet func(uri string, v any) error

// peerPost posts a JSON body to a member and decodes its 200's JSON.
type peerPost func(uri string, body []byte, v any) error

// askMembers runs ask for every other member with an API URL, at once,
// each within usagePeerTimeout, and returns the answers of those that
// succeeded with the coverage. ask may call get several times (pages).
func askMembers[T any](s *Server, ctx *fasthttp.RequestCtx, ask func(get peerGet) (T, error)) ([]T, *usageCoverage) {
	return fanOut(s, ctx, "usage", func(get peerGet, _ peerPost) (T, error) { return ask(get) })
}

// fanOut is askMembers for any query (what names it in the coverage and
// logs), with a POST too (A2A's JSON-RPC ListTasks, a2a_cluster.go).
func fanOut[T any](s *Server, ctx *fasthttp.RequestCtx, what string, ask func(get peerGet, post peerPost) (T, error)) ([]T, *usageCoverage) {
	cov := &usageCoverage{Nodes: []string{s.cluster.NodeName()}, MissingNodes: []string{}}
	mctx, cancel := context.WithTimeout(s.reqCtx(ctx), forwardDialTimeout)
	ms, err := s.cluster.Members(mctx)
	cancel()
	if err != nil {
		cov.Partial, cov.ClusterError = true, "the member list could not be read (etcd did not answer): only this node's "+what+" is counted"
		return nil, cov
	}
	peers := map[string]string{}
	for _, m := range ms {
		// A restarted node may still have its old record beside the new
		// one: one question per node name.
		if !m.Self && m.HTTPURL != "" && m.NodeName != s.cluster.NodeName() {
			peers[m.NodeName] = m.HTTPURL
		}
	}
	type answer struct {
		node string
		v    T
		err  error
	}
	// The caller's credential, read once: the request is not for
	// concurrent use.
	var hdr [][2]string
	for _, h := range forwardHeaders {
		if v := ctx.Request.Header.Peek(h); len(v) > 0 && h != "Content-Type" {
			hdr = append(hdr, [2]string{h, string(v)})
		}
	}
	out := make(chan answer, len(peers))
	var wg sync.WaitGroup
	for node, base := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(usagePeerTimeout)
			v, err := ask(func(uri string, v any) error { return s.hosts.peerJSON(hdr, base+uri, nil, deadline, v) },
				func(uri string, body []byte, v any) error { return s.hosts.peerJSON(hdr, base+uri, body, deadline, v) })
			out <- answer{node, v, err}
		}()
	}
	wg.Wait()
	close(out)
	var got []T
	for a := range out {
		if a.err != nil {
			s.log.Warn().Err(a.err).Str("node", a.node).Str("path", string(ctx.Path())).Msgf("cluster: a member did not answer a %s query; the answer is partial", what)
			cov.MissingNodes = append(cov.MissingNodes, a.node)
			continue
		}
		cov.Nodes = append(cov.Nodes, a.node)
		got = append(got, a.v)
	}
	sort.Strings(cov.Nodes[1:])
	sort.Strings(cov.MissingNodes)
	cov.Partial = len(cov.MissingNodes) > 0
	return got, cov
}

// peerJSON GETs uri from a member (POSTs body, if any, as JSON) with the
// caller's credential (hdr), as a member's question (forwardedHeader),
// and decodes a 200's JSON into v.
func (r *hostRouter) peerJSON(hdr [][2]string, uri string, body []byte, deadline time.Time, v any) error {
	req := fasthttp.AcquireRequest()
	res := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(res)
	req.Header.SetMethod(fasthttp.MethodGet)
	req.SetRequestURI(uri)
	if body != nil {
		req.Header.SetMethod(fasthttp.MethodPost)
		req.Header.SetContentType("application/json")
		req.SetBody(body)
	}
	for _, h := range hdr {
		req.Header.Set(h[0], h[1])
	}
	req.Header.Set(forwardedHeader, r.self)
	if err := r.client.DoDeadline(req, res, deadline); err != nil {
		return err
	}
	if res.StatusCode() != fasthttp.StatusOK {
		return fmt.Errorf("status %d", res.StatusCode())
	}
	return json.Unmarshal(res.Body(), v)
}

// peerQuery is path with a query of the given names and values (an
// empty value leaves its name out).
func peerQuery(path string, kv ...string) string {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			q.Set(kv[i], kv[i+1])
		}
	}
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

// pagedPeer fetches pages of usagePeerPage from a member until it has
// want items or the member has no more; page decodes one page and says
// how many items it held and how many the member has in all.
func pagedPeer(get peerGet, uri func(offset int) string, want int, page func(get peerGet, uri string) (n, total int, err error)) error {
	for offset := 0; offset < want; offset += usagePeerPage {
		n, total, err := page(get, uri(offset))
		if err != nil {
			return err
		}
		if n < usagePeerPage || offset+n >= total {
			return nil
		}
	}
	return nil
}

// writeUsage writes a report with the cluster's coverage (nil: a single
// node's or a member's own report, as before).
func writeUsage(ctx *fasthttp.RequestCtx, v any, cov *usageCoverage) error {
	if cov == nil {
		writeJSON(ctx, fasthttp.StatusOK, v)
		return nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	extra, err := json.Marshal(cov)
	if err != nil {
		return err
	}
	// v is an object: its fields, then the coverage's.
	body := bytes.TrimRight(buf.Bytes(), "\n")
	body = append(append(body[:len(body)-1], ','), extra[1:]...)
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.Write(append(body, '\n'))
	return nil
}
