/* eventwire: export macro. Everything not marked EW_API is hidden. */
#ifndef EVENTWIRE_EXPORT_H
#define EVENTWIRE_EXPORT_H

#if defined(_WIN32)
#  if defined(EW_BUILDING_SHARED)
#    define EW_API __declspec(dllexport)
#  elif defined(EW_STATIC)
#    define EW_API
#  else
#    define EW_API __declspec(dllimport)
#  endif
#else
#  define EW_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
#  define EW_BEGIN_DECLS extern "C" {
#  define EW_END_DECLS }
#else
#  define EW_BEGIN_DECLS
#  define EW_END_DECLS
#endif

#endif
