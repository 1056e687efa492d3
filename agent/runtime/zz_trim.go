package runtime

/*
#include <malloc.h>
static int mf_trim(void) { return malloc_trim(0); }
*/
import "C"

func ScratchTrim() { C.mf_trim() }
