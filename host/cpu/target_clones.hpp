// CONVERGENT_TARGET_CLONES("avx2", "default", ...): a function compiled once per instruction set and picked
// at load time (GCC/clang function multiversioning), for the hot loops of a library never built with
// -march. Under ThreadSanitizer it is empty and the plain version alone is built: the clones' ifunc
// resolvers run before the TSan runtime is initialised and crash the program at load.
#pragma once

#if defined(__SANITIZE_THREAD__)
#define CONVERGENT_NO_TARGET_CLONES
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CONVERGENT_NO_TARGET_CLONES
#endif
#endif

#if defined(CONVERGENT_NO_TARGET_CLONES)
#define CONVERGENT_TARGET_CLONES(...)
#else
#define CONVERGENT_TARGET_CLONES(...) __attribute__((target_clones(__VA_ARGS__)))
#endif
