/* segv sets its own task name to argv[1] with prctl(PR_SET_NAME) and
 * dies writing to NULL, so that the kernel reports it as
 * "<name>[<pid>]: segfault at 0 ... in <file name>[...]".
 * Built and run by TestKernelForgery. */
#include <sys/prctl.h>
#include <stddef.h>
int main(int argc, char **argv) {
	if (argc > 1) prctl(PR_SET_NAME, argv[1], 0, 0, 0);
	*(volatile int *)NULL = 1;
	return 0;
}
