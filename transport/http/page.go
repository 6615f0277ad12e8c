package http

import (
	"strconv"

	"github.com/valyala/fasthttp"
)

// Pagination is LibreFang's: ?offset=&limit=, the limit defaulting to and
// clamped at the list's maximum (a larger limit is not an error, as there),
// and the envelope {items, total, offset, limit}. Lists whose seed shape
// has no room for those fields (a bare array) carry the total in
// X-Total-Count and the next page in a Link header instead.

// pageParams reads ?offset= and ?limit= for a list whose default and
// maximum page size are def and max.
func pageParams(ctx *fasthttp.RequestCtx, def, max int) (offset, limit int, err error) {
	if offset, err = intQuery(ctx, 0, 0, 1<<30, "offset"); err != nil {
		return 0, 0, err
	}
	if limit, err = intQuery(ctx, def, 1, 1<<30, "limit"); err != nil {
		return 0, 0, err
	}
	return offset, min(limit, max), nil
}

// page is all[offset:offset+limit], never nil (an empty page is []).
func page[T any](all []T, offset, limit int) []T {
	if offset >= len(all) {
		return []T{}
	}
	return all[offset:min(len(all), offset+limit)]
}

// pageInfo is the paging half of a list envelope: total counts the whole
// list (not this page), next_offset is null on the last page.
type pageInfo struct {
	Total  int  `json:"total"`
	Offset int  `json:"offset"`
	Limit  int  `json:"limit"`
	Next   *int `json:"next_offset"`
}

func pageOf(total, offset, limit int) pageInfo {
	return pageInfo{Total: total, Offset: offset, Limit: limit, Next: nextOffset(total, offset, limit)}
}

// itemsPage is LibreFang's {items, total, offset, limit, next_offset}.
type itemsPage[T any] struct {
	Items []T `json:"items"`
	pageInfo
}

// pageItems is one page of all in the items envelope.
func pageItems[T any](all []T, offset, limit int) itemsPage[T] {
	return itemsPage[T]{Items: page(all, offset, limit), pageInfo: pageOf(len(all), offset, limit)}
}

// nextOffset is the offset of the page after this one; nil on the last.
func nextOffset(total, offset, limit int) *int {
	if offset+limit >= total {
		return nil
	}
	n := offset + limit
	return &n
}

// setPageHeaders is the envelope of a bare-array list: X-Total-Count, and
// Link rel="next" with the next page's offset while there is one.
func setPageHeaders(ctx *fasthttp.RequestCtx, total, offset, limit int) {
	ctx.Response.Header.Set("X-Total-Count", strconv.Itoa(total))
	if next := nextOffset(total, offset, limit); next != nil {
		ctx.Response.Header.Set("Link", "<"+string(ctx.Path())+"?offset="+strconv.Itoa(*next)+"&limit="+strconv.Itoa(limit)+`>; rel="next"`)
	}
}
