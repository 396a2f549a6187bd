;; The WASI preview 1 functions that Go's wasip1 runtime (and its os package, which
;; encoding/json links in) and wasi-libc's stdio (which C's snprintf links in) import,
;; implemented on the module's own memory and importing nothing: the component needs no WASI
;; at all. `wasm-tools component new --adapt` puts it where wasmtime's
;; preview 1 adapter usually goes; that adapter does not do for Go: Go's fd_write alone makes
;; it import wasi:filesystem, which the engine refuses to plugins, and it keeps its own state in
;; the linear memory that Go's heap takes to be all its own.
;;
;; Nothing here talks to the outside world: writes (a panic's message, say) are dropped (the
;; panic itself still traps: proc_exit is unreachable), the clocks are a counter that only
;; ever moves forward, and random bytes come from a fixed-seed generator (Go uses them for map
;; seeds and the like, nothing that must be secret here).
(module
  (import "env" "memory" (memory 0))

  ;; Nanoseconds of a fake clock: advanced a microsecond per reading and by each sleep.
  (global $now (mut i64) (i64.const 1))
  ;; xorshift64 state
  (global $seed (mut i64) (i64.const 0x2545f4914f6cdd1d))

  (func (export "sched_yield") (result i32) (i32.const 0))

  (func (export "proc_exit") (param i32) (unreachable))

  (func (export "args_get") (param i32 i32) (result i32) (i32.const 0))

  ;; No arguments: count 0, buffer size 0.
  (func (export "args_sizes_get") (param $argc i32) (param $size i32) (result i32)
    (i32.store (local.get $argc) (i32.const 0))
    (i32.store (local.get $size) (i32.const 0))
    (i32.const 0))

  (func (export "environ_get") (param i32 i32) (result i32) (i32.const 0))

  (func (export "environ_sizes_get") (param $count i32) (param $size i32) (result i32)
    (i32.store (local.get $count) (i32.const 0))
    (i32.store (local.get $size) (i32.const 0))
    (i32.const 0))

  (func (export "clock_time_get") (param $id i32) (param $precision i64) (param $out i32)
        (result i32)
    (global.set $now (i64.add (global.get $now) (i64.const 1000)))
    (i64.store (local.get $out) (global.get $now))
    (i32.const 0))

  ;; Claims every byte written: the sum of the iovecs' lengths (each iovec is ptr, len).
  (func (export "fd_write") (param $fd i32) (param $iovs i32) (param $count i32)
        (param $written i32) (result i32)
    (local $total i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $count)))
        (local.set $total
          (i32.add (local.get $total) (i32.load offset=4 (local.get $iovs))))
        (local.set $iovs (i32.add (local.get $iovs) (i32.const 8)))
        (local.set $count (i32.sub (local.get $count) (i32.const 1)))
        (br $next)))
    (i32.store (local.get $written) (local.get $total))
    (i32.const 0))

  (func (export "random_get") (param $buf i32) (param $len i32) (result i32)
    (local $x i64)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $len)))
        (local.set $x (global.get $seed))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 13))))
        (local.set $x (i64.xor (local.get $x) (i64.shr_u (local.get $x) (i64.const 7))))
        (local.set $x (i64.xor (local.get $x) (i64.shl (local.get $x) (i64.const 17))))
        (global.set $seed (local.get $x))
        (i32.store8 (local.get $buf) (i32.wrap_i64 (i64.shr_u (local.get $x) (i64.const 32))))
        (local.set $buf (i32.add (local.get $buf) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; Every subscription fires at once (Go polls only to sleep, when it has nothing to run): a
  ;; clock subscription moves the fake clock to its deadline. A subscription is 48 bytes
  ;; (userdata u64, tag u8 at 8, clock id u32 at 16, timeout u64 at 24, flags u16 at 40); an
  ;; event 32 (userdata u64, error u16 at 8, type u8 at 10, the rest zero).
  (func (export "poll_oneoff") (param $in i32) (param $out i32) (param $count i32)
        (param $events i32) (result i32)
    (local $i i32)
    (local $timeout i64)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (if (i32.eqz (i32.load8_u offset=8 (local.get $in)))
          (then
            (local.set $timeout (i64.load offset=24 (local.get $in)))
            (if (i32.and (i32.load16_u offset=40 (local.get $in)) (i32.const 1))
              (then ;; an absolute deadline
                (if (i64.gt_u (local.get $timeout) (global.get $now))
                  (then (global.set $now (local.get $timeout)))))
              (else
                (global.set $now (i64.add (global.get $now) (local.get $timeout)))))))
        (i64.store (local.get $out) (i64.load (local.get $in)))
        (i32.store16 offset=8 (local.get $out) (i32.const 0))
        (i32.store8 offset=10 (local.get $out) (i32.load8_u offset=8 (local.get $in)))
        (i64.store offset=16 (local.get $out) (i64.const 0))
        (i64.store offset=24 (local.get $out) (i64.const 0))
        (local.set $in (i32.add (local.get $in) (i32.const 48)))
        (local.set $out (i32.add (local.get $out) (i32.const 32)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.store (local.get $events) (local.get $count))
    (i32.const 0))

  ;; Go's os package, when linked in, looks at file descriptors 0-2 and at the preopened
  ;; directories (there are none: fd_prestat_get answers EBADF, errno 8).
  (func (export "fd_close") (param i32) (result i32) (i32.const 0))

  ;; Standard input is empty: 0 bytes read.
  (func (export "fd_read") (param $fd i32) (param $iovs i32) (param $count i32)
        (param $read i32) (result i32)
    (i32.store (local.get $read) (i32.const 0))
    (i32.const 0))

  ;; fds 0-2 are character devices (filetype 2) with no flags and all rights; others EBADF.
  ;; An fdstat is 24 bytes: filetype u8, flags u16 at 2, rights u64 at 8, inherited at 16.
  (func (export "fd_fdstat_get") (param $fd i32) (param $out i32) (result i32)
    (if (i32.gt_u (local.get $fd) (i32.const 2)) (then (return (i32.const 8))))
    (i64.store (local.get $out) (i64.const 2))
    (i64.store offset=8 (local.get $out) (i64.const -1))
    (i64.store offset=16 (local.get $out) (i64.const -1))
    (i32.const 0))

;; Nothing can seek: ESPIPE (errno 70).
  (func (export "fd_seek") (param i32 i64 i32 i32) (result i32) (i32.const 70))

  (func (export "fd_fdstat_set_flags") (param i32 i32) (result i32) (i32.const 0))

  (func (export "fd_prestat_get") (param i32 i32) (result i32) (i32.const 8))

  (func (export "fd_prestat_dir_name") (param i32 i32 i32) (result i32) (i32.const 8))
)
