/*
 * cellvisor's tiny test guest: a 64-bit "kernel" for cellvisor's VMM that does its work in
 * ring 3, where this machine's nested KVM runs guest code at native speed. The VMM enters it
 * like a Linux kernel (64-bit, ring 0, paging on, the VMM's GDT: user code 0x23, user data
 * 0x2b); it drops to ring 3 with IOPL 3 (port I/O allowed, interrupts off) and then:
 *   - prints a banner on the serial port (COM1, 0x3f8),
 *   - times EXITS port writes to port 0x80 (each one an exit to the VMM) with rdtsc, in ring 3
 *     and (timed before the drop) in ring 0, like the usual KVM exit probes,
 *   - reads an unbacked MMIO address (an MMIO exit; it must read as all ones),
 *   - if a virtio block device sits at the first virtio-mmio window: drives it by polling
 *     (no interrupts) through one 8-entry virtqueue — prints the first line of sector 0,
 *     writes a line to sector 1 — then breaks the rules four ways (a buffer outside guest
 *     memory, a descriptor chain that loops, an available index far ahead, a head index past
 *     the queue), each of which must fail the device (DEVICE_NEEDS_RESET) and nothing more,
 *     resetting the device between them, and finally reads sector 1 back through a clean queue,
 *   - prints the figures, and resets the machine through the i8042 (out 0x64, 0xfe).
 * Build: as --64 -o tiny.o tiny.S && ld -static -nostdlib -Ttext=0x200000 -e _start -o tiny.elf tiny.o
 */
        .intel_syntax noprefix
        .code64
        .set COM1, 0x3f8
        .set EXITS, 1000
        .set MMIO, 0xd0000000
        .set UNBACKED, 0xd8000000
        /* The virtqueue: 8 descriptors, the available and used rings, request buffers. */
        .set QSIZE, 8
        .set DESC, 0x300000
        .set AVAIL, 0x300100
        .set USED, 0x300200
        .set HDR, 0x300400
        .set STATUS, 0x300500
        .set BUF, 0x301000

/* Time EXITS port writes to port 0x80 (after one warm-up): TSC ticks per exit into DST. */
        .macro time_exits dst
        out 0x80, al
        rdtsc
        shl rdx, 32
        or rax, rdx
        mov r12, rax
        mov ecx, EXITS
1:      out 0x80, al
        dec ecx
        jnz 1b
        rdtsc
        shl rdx, 32
        or rax, rdx
        sub rax, r12
        xor edx, edx
        mov rcx, EXITS
        div rcx
        mov \dst, rax
        .endm

        .text
        .globl _start
_start:
        cli
        /* Exit round trips from ring 0 first. */
        time_exits r14                  /* TSC ticks per exit, ring 0 */
        push 0x2b                       /* ss: user data, RPL 3 */
        push 0x70000                    /* rsp: the user stack */
        push 0x3002                     /* rflags: IOPL 3, interrupts off */
        push 0x23                       /* cs: user code, RPL 3 */
        lea rax, [rip + user]
        push rax
        iretq

user:   lea rsi, [rip + banner]
        call puts

        /* Exit round trips from ring 3. */
        time_exits r13                  /* TSC ticks per exit, ring 3 */
        lea rsi, [rip + exits]
        call puts
        mov rax, r13
        call putnum
        lea rsi, [rip + ticks]
        call puts
        lea rsi, [rip + exits0]
        call puts
        mov rax, r14
        call putnum
        lea rsi, [rip + ticks]
        call puts

        /* An MMIO read where no device is: all ones. */
        mov eax, UNBACKED
        mov eax, [rax]
        lea rsi, [rip + mmio_ok]
        cmp eax, 0xffffffff
        je 2f
        lea rsi, [rip + mmio_bad]
2:      call puts

        /* A virtio block device at the first window? ("virt", device ID 2) */
        mov eax, MMIO
        cmp dword ptr [rax], 0x74726976
        jne 9f
        cmp dword ptr [rax + 8], 2
        jne 9f
        call blk_test
9:
        lea rsi, [rip + bye]
        call puts
        mov al, 0xfe                    /* i8042: pulse the CPU reset line */
        out 0x64, al
3:      jmp 3b

/* virtio-mmio registers, at rbx = MMIO. */
        .set R_FEAT, 0x10
        .set R_FEATSEL, 0x14
        .set R_DFEAT, 0x20
        .set R_DFEATSEL, 0x24
        .set R_QSEL, 0x30
        .set R_QNUM, 0x38
        .set R_QREADY, 0x44
        .set R_NOTIFY, 0x50
        .set R_STATUS, 0x70
        .set R_DESC, 0x80
        .set R_AVAIL, 0x90
        .set R_USED, 0xa0

/* Reset the device and set up queue 0 (empty rings); DRIVER_OK. */
blk_init:
        mov ebx, MMIO
        mov dword ptr [rbx + R_STATUS], 0
        mov dword ptr [rbx + R_STATUS], 3           /* ACKNOWLEDGE | DRIVER */
        mov dword ptr [rbx + R_DFEATSEL], 1
        mov dword ptr [rbx + R_DFEAT], 1            /* VERSION_1 (bit 32) */
        mov dword ptr [rbx + R_DFEATSEL], 0
        mov dword ptr [rbx + R_DFEAT], 0
        mov dword ptr [rbx + R_STATUS], 0xb         /* + FEATURES_OK */
        mov edi, DESC                               /* clear the queue's memory */
        xor eax, eax
        mov ecx, 0x600
        rep stosb
        mov dword ptr [rbx + R_QSEL], 0
        mov dword ptr [rbx + R_QNUM], QSIZE
        mov dword ptr [rbx + R_DESC], DESC
        mov dword ptr [rbx + R_DESC + 4], 0
        mov dword ptr [rbx + R_AVAIL], AVAIL
        mov dword ptr [rbx + R_AVAIL + 4], 0
        mov dword ptr [rbx + R_USED], USED
        mov dword ptr [rbx + R_USED + 4], 0
        mov dword ptr [rbx + R_QREADY], 1
        mov dword ptr [rbx + R_STATUS], 0xf         /* + DRIVER_OK */
        mov r15w, 0                                 /* our copy of avail.idx */
        ret

/* Descriptor eax: address rdx, length ecx, flags r8w, next r9w. */
desc:   shl eax, 4
        add eax, DESC
        mov [rax], rdx
        mov [rax + 8], ecx
        mov [rax + 12], r8w
        mov [rax + 14], r9w
        ret

/* A 3-descriptor request: type eax, sector rdx, data flags r10w (2 = device writes). */
request:
        mov dword ptr [HDR], eax
        mov dword ptr [HDR + 4], 0
        mov [HDR + 8], rdx
        mov byte ptr [STATUS], 0xff
        xor eax, eax
        mov edx, HDR
        mov ecx, 16
        mov r8w, 1                                  /* NEXT */
        mov r9w, 1
        call desc
        mov eax, 1
        mov edx, BUF
        mov ecx, 512
        mov r8w, r10w
        or r8w, 1
        mov r9w, 2
        call desc
        mov eax, 2
        mov edx, STATUS
        mov ecx, 1
        mov r8w, 2                                  /* WRITE */
        xor r9d, r9d
        call desc
        xor eax, eax                                /* head: descriptor 0 */
        /* fall through */

/* Offer head ax, notify, wait until it is used or the device fails. Returns eax: 0 used,
   1 failed (status DEVICE_NEEDS_RESET). */
submit: movzx ecx, r15w
        and ecx, QSIZE - 1
        mov [AVAIL + 4 + rcx * 2], ax
        inc r15w
        mov [AVAIL + 2], r15w
        /* fall through */
kick:   mov dword ptr [rbx + R_NOTIFY], 0
1:      mov eax, [rbx + R_STATUS]
        test eax, 0x40
        jnz 2f
        cmp [USED + 2], r15w
        jne 1b
        xor eax, eax
        ret
2:      mov eax, 1
        ret

/* Print "ok" or "FAILED" for a hostile case (eax = 1 expected: the device failed). */
expect_failed:
        lea rsi, [rip + failed_ok]
        cmp eax, 1
        je 1f
        lea rsi, [rip + failed_bad]
1:      jmp puts

blk_test:
        call blk_init
        /* Read sector 0 and print its first line. */
        mov eax, 0
        xor edx, edx
        mov r10w, 2
        call request
        test eax, eax
        jnz 8f
        cmp byte ptr [STATUS], 0
        jne 8f
        lea rsi, [rip + sector0]
        call puts
        mov esi, BUF
        call putline
        /* Write a line to sector 1. */
        lea rsi, [rip + written]
        mov edi, BUF
        mov ecx, 512
        xor eax, eax
        push rdi
        push rcx
        rep stosb
        pop rcx
        pop rdi
1:      lodsb
        stosb
        test al, al
        jnz 1b
        mov eax, 1
        mov edx, 1
        xor r10w, r10w
        call request
        test eax, eax
        jnz 8f
        cmp byte ptr [STATUS], 0
        jne 8f
        lea rsi, [rip + wrote]
        call puts

        /* Hostile 1: the data buffer outside guest memory. */
        lea rsi, [rip + h_addr]
        call puts
        mov eax, 1
        mov rdx, 0x7f0000000000
        mov ecx, 512
        mov r8w, 3
        mov r9w, 2
        call desc
        xor eax, eax
        call submit
        call expect_failed

        /* Hostile 2: a chain that loops (descriptor 0 -> 0). */
        lea rsi, [rip + h_loop]
        call puts
        call blk_init
        xor eax, eax
        mov edx, HDR
        mov ecx, 16
        mov r8w, 1
        xor r9d, r9d
        call desc
        xor eax, eax
        call submit
        call expect_failed

        /* Hostile 3: the available index far ahead of what the queue can hold. */
        lea rsi, [rip + h_idx]
        call puts
        call blk_init
        mov r15w, 1000
        mov [AVAIL + 2], r15w
        call kick
        call expect_failed

        /* Hostile 4: a head index past the queue. */
        lea rsi, [rip + h_head]
        call puts
        call blk_init
        mov eax, 200
        call submit
        call expect_failed

        /* After a reset the device works again: read sector 1 back. */
        call blk_init
        mov eax, 0
        mov edx, 1
        mov r10w, 2
        call request
        test eax, eax
        jnz 8f
        lea rsi, [rip + sector1]
        call puts
        mov esi, BUF
        call putline
        ret
8:      lea rsi, [rip + blk_bad]
        jmp puts

/* Print the line at rsi (up to a newline or NUL, at most 80 bytes) and a newline. */
putline:
        mov ecx, 80
1:      lodsb
        test al, al
        jz 2f
        cmp al, 10
        je 2f
        mov dx, COM1
        out dx, al
        loop 1b
2:      mov al, 10
        mov dx, COM1
        out dx, al
        ret

/* Print the NUL-terminated string at rsi. */
puts:   lodsb
        test al, al
        jz 1f
        mov dx, COM1
        out dx, al
        jmp puts
1:      ret

/* Print rax in decimal. */
putnum: lea rdi, [rip + numbuf + 20]
        mov byte ptr [rdi], 0
        mov rcx, 10
1:      xor edx, edx
        div rcx
        add dl, '0'
        dec rdi
        mov [rdi], dl
        test rax, rax
        jnz 1b
        mov rsi, rdi
        jmp puts

        .data
banner: .asciz "tiny guest: up in ring 3\n"
exits:  .asciz "tiny guest: exit round trip "
exits0: .asciz "tiny guest: exit round trip from ring 0 "
ticks:  .asciz " tsc ticks\n"
mmio_ok: .asciz "tiny guest: mmio read ok\n"
mmio_bad: .asciz "tiny guest: mmio read WRONG\n"
sector0: .asciz "tiny guest: virtio-blk sector 0: "
sector1: .asciz "tiny guest: virtio-blk sector 1: "
written: .asciz "written by the tiny guest\n"
wrote:  .asciz "tiny guest: virtio-blk wrote sector 1\n"
h_addr: .asciz "tiny guest: hostile buffer outside memory: "
h_loop: .asciz "tiny guest: hostile looping chain: "
h_idx:  .asciz "tiny guest: hostile available index: "
h_head: .asciz "tiny guest: hostile head index: "
failed_ok: .asciz "device failed, as it must\n"
failed_bad: .asciz "device did NOT fail\n"
blk_bad: .asciz "tiny guest: virtio-blk request FAILED\n"
bye:    .asciz "tiny guest: done, resetting\n"
numbuf: .space 24
