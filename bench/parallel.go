package main

import (
	"context"
	"sync"
	"sync/atomic"
)

// forEach runs do(i) for every i in [0, n) on workers goroutines, each
// taking the next i until they are all taken or ctx ends. A worker stops at
// its first error; forEach returns once all have stopped, with one of the
// errors (nil when none failed).
func forEach(ctx context.Context, workers, n int, do func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := do(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
