//go:build cgo && linux

package rsasign

// No OpenSSL header is needed to build: the few functions used are declared
// here as pointers and looked up in libcrypto.so.3 at run time (their
// signatures are OpenSSL 3.0's, stable across 3.x). Each call that can
// fail reads OpenSSL's error queue in the same C call, since the queue is
// per thread and the next cgo call may run on another one.

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>

typedef struct evp_pkey_st EVP_PKEY;
typedef struct evp_pkey_ctx_st EVP_PKEY_CTX;
typedef struct evp_md_st EVP_MD;

#define DKIMD_RSA_PKCS1_PADDING 1

static unsigned long (*p_OpenSSL_version_num)(void);
static EVP_PKEY *(*p_d2i_AutoPrivateKey)(EVP_PKEY **, const unsigned char **, long);
static void (*p_EVP_PKEY_free)(EVP_PKEY *);
static EVP_PKEY_CTX *(*p_EVP_PKEY_CTX_new)(EVP_PKEY *, void *);
static void (*p_EVP_PKEY_CTX_free)(EVP_PKEY_CTX *);
static int (*p_EVP_PKEY_sign_init)(EVP_PKEY_CTX *);
static int (*p_EVP_PKEY_CTX_set_rsa_padding)(EVP_PKEY_CTX *, int);
static int (*p_EVP_PKEY_CTX_set_signature_md)(EVP_PKEY_CTX *, const EVP_MD *);
static const EVP_MD *(*p_EVP_sha256)(void);
static int (*p_EVP_PKEY_sign)(EVP_PKEY_CTX *, unsigned char *, size_t *, const unsigned char *, size_t);
static unsigned long (*p_ERR_get_error)(void);
static void (*p_ERR_error_string_n)(unsigned long, char *, size_t);
static void (*p_ERR_clear_error)(void);

// dkimd_load opens libcrypto.so.3 and finds every function; NULL when all
// are there, else what is missing.
static const char *dkimd_load(void) {
	void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *e = dlerror();
		return e ? e : "dlopen libcrypto.so.3 failed";
	}
#define DKIMD_SYM(name) \
	if ((*(void **)(&p_##name) = dlsym(h, #name)) == NULL) return "libcrypto.so.3 has no " #name;
	DKIMD_SYM(OpenSSL_version_num)
	DKIMD_SYM(d2i_AutoPrivateKey)
	DKIMD_SYM(EVP_PKEY_free)
	DKIMD_SYM(EVP_PKEY_CTX_new)
	DKIMD_SYM(EVP_PKEY_CTX_free)
	DKIMD_SYM(EVP_PKEY_sign_init)
	DKIMD_SYM(EVP_PKEY_CTX_set_rsa_padding)
	DKIMD_SYM(EVP_PKEY_CTX_set_signature_md)
	DKIMD_SYM(EVP_sha256)
	DKIMD_SYM(EVP_PKEY_sign)
	DKIMD_SYM(ERR_get_error)
	DKIMD_SYM(ERR_error_string_n)
	DKIMD_SYM(ERR_clear_error)
#undef DKIMD_SYM
	return NULL;
}

static unsigned long dkimd_version(void) { return p_OpenSSL_version_num(); }

static unsigned long dkimd_err(void) {
	unsigned long e = p_ERR_get_error();
	p_ERR_clear_error();
	return e ? e : 1;
}

static void dkimd_err_string(unsigned long e, char *buf, size_t n) { p_ERR_error_string_n(e, buf, n); }

static EVP_PKEY *dkimd_parse(const unsigned char *der, long n, unsigned long *err) {
	const unsigned char *p = der;
	EVP_PKEY *k = p_d2i_AutoPrivateKey(NULL, &p, n);
	if (k == NULL) *err = dkimd_err();
	return k;
}

static void dkimd_free_key(EVP_PKEY *k) { p_EVP_PKEY_free(k); }

// dkimd_new_ctx makes a signing context for k: PKCS#1 v1.5 over a SHA-256
// digest, which libcrypto wraps in its DigestInfo (RFC 8017, section 9.2).
static EVP_PKEY_CTX *dkimd_new_ctx(EVP_PKEY *k, unsigned long *err) {
	EVP_PKEY_CTX *c = p_EVP_PKEY_CTX_new(k, NULL);
	if (c == NULL) {
		*err = dkimd_err();
		return NULL;
	}
	if (p_EVP_PKEY_sign_init(c) <= 0 || p_EVP_PKEY_CTX_set_rsa_padding(c, DKIMD_RSA_PKCS1_PADDING) <= 0 ||
	    p_EVP_PKEY_CTX_set_signature_md(c, p_EVP_sha256()) <= 0) {
		*err = dkimd_err();
		p_EVP_PKEY_CTX_free(c);
		return NULL;
	}
	return c;
}

static void dkimd_free_ctx(EVP_PKEY_CTX *c) { p_EVP_PKEY_CTX_free(c); }

static int dkimd_sign(EVP_PKEY_CTX *c, unsigned char *sig, size_t *siglen, const unsigned char *dg, size_t n, unsigned long *err) {
	if (p_EVP_PKEY_sign(c, sig, siglen, dg, n) <= 0) {
		*err = dkimd_err();
		return 0;
	}
	return 1;
}
*/
import "C"

import (
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

var loaded struct {
	once sync.Once
	err  error
}

// Available says whether libcrypto 3 could be loaded, and if not why.
func Available() error {
	loaded.once.Do(func() {
		if msg := C.dkimd_load(); msg != nil {
			loaded.err = fmt.Errorf("rsasign: libcrypto unavailable: %s", C.GoString(msg))
			return
		}
		if v := C.dkimd_version(); v < 0x30000000 {
			loaded.err = fmt.Errorf("rsasign: libcrypto.so.3 is version %#x, not OpenSSL 3", uint64(v))
		}
	})
	return loaded.err
}

func opensslError(what string, e C.ulong) error {
	var buf [256]C.char
	C.dkimd_err_string(e, &buf[0], C.size_t(len(buf)))
	return fmt.Errorf("rsasign: %s: %s", what, C.GoString(&buf[0]))
}

// handle is a key inside libcrypto and the signing contexts made for it.
// A context is used by one goroutine at a time; the pool keeps a few, so
// that a signature costs no context set-up (a fresh EVP_PKEY_CTX per call
// fetches the provider's RSA implementation each time).
type handle struct {
	mu   sync.RWMutex // held shared while signing, exclusive to free
	pkey *C.EVP_PKEY  // nil once freed
	ctxs chan *C.EVP_PKEY_CTX
}

func newHandle(k *rsa.PrivateKey) (*handle, error) {
	der := x509.MarshalPKCS1PrivateKey(k)
	defer clear(der)
	var e C.ulong
	pkey := C.dkimd_parse((*C.uchar)(unsafe.Pointer(&der[0])), C.long(len(der)), &e)
	if pkey == nil {
		return nil, opensslError("parse key", e)
	}
	return &handle{pkey: pkey, ctxs: make(chan *C.EVP_PKEY_CTX, 2*runtime.GOMAXPROCS(0))}, nil
}

// sign signs digest with a context from the pool; ok is false when the
// key was freed.
func (h *handle) sign(digest []byte, size int) (sig []byte, ok bool, err error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.pkey == nil {
		return nil, false, nil
	}
	var e C.ulong
	var c *C.EVP_PKEY_CTX
	select {
	case c = <-h.ctxs:
	default:
		if c = C.dkimd_new_ctx(h.pkey, &e); c == nil {
			return nil, true, opensslError("signing context", e)
		}
	}
	sig = make([]byte, size)
	n := C.size_t(len(sig))
	if C.dkimd_sign(c, (*C.uchar)(unsafe.Pointer(&sig[0])), &n, (*C.uchar)(unsafe.Pointer(&digest[0])), C.size_t(len(digest)), &e) == 0 {
		// A context that failed is not trusted with another signature.
		C.dkimd_free_ctx(c)
		return nil, true, opensslError("sign", e)
	}
	select {
	case h.ctxs <- c:
	default:
		C.dkimd_free_ctx(c)
	}
	if int(n) != size {
		return nil, true, errors.New("rsasign: libcrypto returned a signature of the wrong length")
	}
	return sig, true, nil
}

// free releases the contexts and the key; later calls do nothing.
func (h *handle) free() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pkey == nil {
		return
	}
	for {
		select {
		case c := <-h.ctxs:
			C.dkimd_free_ctx(c)
			continue
		default:
		}
		break
	}
	C.dkimd_free_key(h.pkey)
	h.pkey = nil
}
