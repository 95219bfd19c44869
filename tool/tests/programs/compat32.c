/* A 32-bit program with known syscalls, for tests/compat.rs: built with
 * `gcc -m32 -static`, it runs on a 64-bit kernel through the compat (i386) ABI.
 * It prints "ready", waits for a line on stdin, then:
 *   1000 x read(/dev/zero, 4096)      other->user
 *   1000 x write(/dev/null, 4096)     user->other
 *   50 x sendmmsg of 4 UDP messages (100+200+300+400 bytes) and recvmmsg of 4, over
 *   loopback, through the direct syscalls (glibc would use socketcall on i386)
 * prints "done" and exits. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int udp(struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    socklen_t len = sizeof *addr;
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)addr, len) || getsockname(fd, (struct sockaddr *)addr, &len))
        _exit(2);
    return fd;
}

int main(void) {
    static char buf[4096], msgs[4][400], in[4][2048];
    char line[16];
    struct sockaddr_in a_addr, b_addr;
    int zero = open("/dev/zero", O_RDONLY), null = open("/dev/null", O_WRONLY);
    int a = udp(&a_addr), b = udp(&b_addr);
    if (zero < 0 || null < 0 || connect(a, (struct sockaddr *)&b_addr, sizeof b_addr) ||
        connect(b, (struct sockaddr *)&a_addr, sizeof a_addr))
        return 2;
    write(1, "ready\n", 6);
    if (read(0, line, sizeof line) <= 0)
        return 2;
    for (int i = 0; i < 1000; i++) {
        if (read(zero, buf, sizeof buf) != sizeof buf || write(null, buf, sizeof buf) != sizeof buf)
            return 3;
    }
    for (int r = 0; r < 50; r++) {
        struct iovec out[4], back[4];
        struct mmsghdr o[4], i[4];
        memset(o, 0, sizeof o);
        memset(i, 0, sizeof i);
        for (int m = 0; m < 4; m++) {
            out[m].iov_base = msgs[m];
            out[m].iov_len = 100 * (m + 1);
            o[m].msg_hdr.msg_iov = &out[m];
            o[m].msg_hdr.msg_iovlen = 1;
            back[m].iov_base = in[m];
            back[m].iov_len = sizeof in[m];
            i[m].msg_hdr.msg_iov = &back[m];
            i[m].msg_hdr.msg_iovlen = 1;
        }
        if (syscall(SYS_sendmmsg, a, o, 4, 0) != 4 || syscall(SYS_recvmmsg, b, i, 4, 0, NULL) != 4)
            return 4;
    }
    write(1, "done\n", 5);
    return 0;
}
